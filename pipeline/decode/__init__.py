"""Reading one untrusted video: what it holds, its sampled frames decoded, resized and cropped in workers."""
