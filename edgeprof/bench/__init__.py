"""The runner: each configuration in its own child process, warm-up, repetitions, one record each."""
