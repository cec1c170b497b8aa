"""The video flow: a request and images in, frames out. Conditioning, sampling with the keyframe / loop /
plain dispatch, decoding, continuing a video (`extend`), and the one-call `generate`."""
