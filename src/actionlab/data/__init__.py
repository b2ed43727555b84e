"""Video data: readers, clip samplers, clip-consistent transforms, datasets, the datamodule."""
