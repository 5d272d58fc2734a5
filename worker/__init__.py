"""ragq's Celery worker and the RAG pipeline it runs."""
