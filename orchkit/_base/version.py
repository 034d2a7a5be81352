"""The version of orchkit (read by the build from this file)."""

VERSION = "0.1.0"
