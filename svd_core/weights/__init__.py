"""Files to models and back: reading and validating safetensors, detecting the family and layout, renaming
(`layout`, `convert/`), building the networks (`models`), random weights in the official layouts."""
