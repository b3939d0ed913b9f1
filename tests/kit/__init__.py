"""portcullis test kit: a recording SMTP backend, the daemon under test, a raw SMTP client.

    from kit.recorder import Recorder, STALL, HANGUP, GARBAGE
    from kit.proxy import Proxy, binary_path
    from kit.smtpclient import RawClient, Reply
"""
