"""The diffusion math, free of models and conditioning: EDM preconditioning (`edm`), noise schedules and
samplers as pure functions of (denoiser, x, sigmas) (`sampling`), per-frame classifier-free guidance
(`guidance`) and guidance split across two processes (`parallel`)."""
