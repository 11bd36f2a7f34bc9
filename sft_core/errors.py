"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class SFTError(Exception):
    """A problem the user can fix (bad input, bad config, missing file)."""


class ConfigError(SFTError):
    """An invalid configuration key or value."""


class DataError(SFTError):
    """An unreadable or malformed data file."""


class TrainingInterrupted(SFTError):
    """Training stopped on SIGINT or SIGTERM after writing a checkpoint at the step it reached.

    ``exit_code`` is the shell's code for death by that signal (130, 143), so that a scheduler or a
    script sees an interrupted run, not a failed or a finished one; ``--resume`` continues it.
    """

    def __init__(self, signal_name: str, signal_number: int, step: int, checkpoint, main_process: bool = True):
        super().__init__(f"interrupted by {signal_name} at step {step}: checkpoint written to {checkpoint}; "
                         "continue with --resume")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        self.exit_code = 128 + signal_number
        self.main_process = main_process  # under torchrun every process raises it; one says so
