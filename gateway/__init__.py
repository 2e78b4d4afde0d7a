"""HTTP/JSON gateway: reads results from the document store, sends compute to the gRPC services."""
