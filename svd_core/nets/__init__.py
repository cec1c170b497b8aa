"""The networks, their attribute names mirroring the official checkpoint's keys: the spatio-temporal UNet
(`unet`), the OpenCLIP ViT-H/14 image tower (`image_encoder`), the VAE with its temporal decoder (`vae`), the
layers they share (`layers`, `embeddings`) and the pieces their big activations are cut into (`pieces`)."""
