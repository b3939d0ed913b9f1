'use strict'
// bench_nordns - a Haraka plugin for make bench: answers the lookup_rdns
// hook at once, so Haraka does not look every client up in the DNS before
// its greeting (the core does, unless a plugin answers). The bench's
// portcullis runs with client_rdns = no; this is the same for Haraka.
exports.hook_lookup_rdns = (next) => next(OK, 'localhost')
