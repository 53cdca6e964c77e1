"""Record contracts of every Sentinel topic: Avro schemas, codecs, the feature layout."""
