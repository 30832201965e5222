"""The machine model: processes, mms, VMAs, page tables, folios and files.

Linux 6.18 semantics, kernel names.  Nothing here knows which anonymous rmap
design is plugged in: every anon-rmap decision goes through the hooks of
:class:`cowctx.rmap.protocol.AnonRmap`.
"""
