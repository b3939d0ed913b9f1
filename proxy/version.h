/*
 * version.h - the version, in one place: the Makefile (VERSION, the .pc
 * file, the package) and debian/changelog's test read it from here.
 */
#ifndef PORTCULLIS_VERSION_H
#define PORTCULLIS_VERSION_H

#define PORTCULLIS_VERSION "0.1.0"

#endif
