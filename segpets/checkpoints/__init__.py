"""A checkpoint's whole life: written atomically (io), read back and rebuilt (load), checked
before anything in it is built (trust), and resumed from (resume)."""
