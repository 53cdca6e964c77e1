"""Record contracts of every Sentinel topic: Avro schemas (``*.avsc``), codecs, the feature layout."""
