"""Clinical segmentation metrics in millimetres and millilitres: overlap, surface distance, volume, lesions."""
