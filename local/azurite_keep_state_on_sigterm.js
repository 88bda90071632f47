// Preloaded into Azurite (NODE_OPTIONS=--require): keeps one SIGTERM listener installed for the process's life.
// Azurite handles the first SIGTERM by saving its state and closing; Node's default action for a SIGTERM that
// finds no listener is to exit at once. When the local host dies, Azurite gets SIGTERM twice a few ms apart (the
// parent-death signal, then the host's group), and the second used to kill it before it had saved: rows the API
// had acknowledged were lost. With this listener the second SIGTERM is ignored; the stop path still ends a stuck
// Azurite with SIGKILL after its grace period.
process.on("SIGTERM", () => {});
