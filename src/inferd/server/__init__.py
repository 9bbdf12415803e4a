"""The HTTP front end: Open Inference Protocol (KServe v2) wire format and handlers."""
