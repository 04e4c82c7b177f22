"""Herald: publishes ScheduledPosts through n8n at the right second."""
