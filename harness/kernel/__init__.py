"""The kernel, wrapped: mount syscalls and ioctls, tree copies, page-cache accounting."""
