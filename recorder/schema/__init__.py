"""What a record must be: the config, the type registry, validation, identifiers and path templates, the compiled accept step (``accept``) and its typed fast path (``fast``)."""
