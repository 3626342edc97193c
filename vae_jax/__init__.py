"""vae_jax: autoencoders and variational autoencoders in JAX/Flax."""
