"""Images: synthetic images, image sources, OCI and docker-archive reading, layer import."""
