"""OpenEDS data: layouts, the frame generator, the spec transforms, augmentations, loading."""
