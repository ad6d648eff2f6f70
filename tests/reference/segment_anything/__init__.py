"""segment-anything's modeling package only (see README.md); upstream's own __init__ also imports the
predictor and mask generator, which the tests do not need, so this file replaces it."""
