"""Record mutations: validate, translate to provider calls, pace, append to the stream, await."""
