"""Real services for the tests (PostgreSQL, Kafka, ...): installed when missing, started on 127.0.0.1 on free
ports in throwaway directories, stopped at the end. No fakes: a test that needs a service gets the real one."""
