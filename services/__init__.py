"""gRPC services: thin servicers over the core library, one folder each (`python -m services.NAME`)."""
