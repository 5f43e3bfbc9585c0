"""The store: hashing, content-addressed objects and action records, out/, the remote cache, gc.

It knows nothing of TensorRT or of frameworks."""
