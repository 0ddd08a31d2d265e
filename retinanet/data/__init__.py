"""Data: the COCO dataset, transforms, aspect-ratio sampler, loaders, image reading, dataset checks, synthetic data and converters."""
