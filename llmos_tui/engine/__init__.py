"""The engine: llama-cpp-python in a supervised child process."""
