//! End-to-end tests of AI-CD. The tests themselves are the `[[test]]` targets of this package
//! (see `README.md`): they run the real `aicd-server` and `aicd-worker` binaries against
//! PostgreSQL, Redis and a fake GitHub. This library is empty; Cargo needs one target that is not
//! a test.
