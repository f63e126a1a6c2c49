"""What a record must be: the compiled accept step (``accept``) and its typed fast path (``fast``)."""
