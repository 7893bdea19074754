"""Files and formats, no PTransforms: the output.dir layout, atomic files, the crash-safe
publish, the TFRecord schema, input listing and decoding."""
