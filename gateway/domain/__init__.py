"""The domain: plain typed values every layer shares; imports nothing of the gateway but ``errors``.

``models`` holds the shapes users send and read (credentials, syncs, consumers, records, events,
tokens); ``objects`` the decrypted objects the services work with (``Credential``, ``Sync``,
``Consumer``, ``Principal``). No I/O here: the store persists these, the services act on them.
"""
