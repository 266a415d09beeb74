"""Stage 2, the data: the dataset registry, IDX parsing and checksums, download, and augmentation."""
