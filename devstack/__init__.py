"""Local-only tooling: the emulator stack, the local API gateway, seeding. Never deployed."""
