"""The embedded testbed: planted-memorization data, its text-to-image model and CLIP, and the digits DDPMs."""
