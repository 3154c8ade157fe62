"""Image quality metrics: reference-based (PSNR, SSIM) and no-reference catalog checks."""
