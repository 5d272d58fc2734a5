"""ragq's Flask front end."""
