"""Generator backends for synthcl, written like third-party plugins and found through entry points
(group ``synthcl.generators``)."""
