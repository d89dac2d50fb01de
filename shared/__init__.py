"""Code shared by Yachay's functions: configuration, the typed core and the service adapters.

Deployed inside every function's source archive. Never imports `functions/` or `trainer_image/`,
and the core modules never import Flask (only `shared.http` does).
"""
