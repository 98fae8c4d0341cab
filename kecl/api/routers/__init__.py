"""One router per resource; :func:`kecl.api.create_app` includes them all."""
