"""Herald: publishes ScheduledPosts through n8n at the right second."""

__version__ = "0.1.0"
