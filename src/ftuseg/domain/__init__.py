"""The stain and scale shift between HPA and HuBMAP: optical models, recoloured stain copies,
stain normalisation and the training augmentations that simulate the target domain."""
