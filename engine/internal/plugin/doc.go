// Package plugin is the engine's plugin host: it finds kds-plugin-* binaries
// in the plugins directory, verifies them against the directory's lock file
// and their .sha256 files before every start, starts them with the
// go-plugin handshake (gRPC only, versions negotiated), asks each for its
// types, builds the type registry and the send-buffer capacity, supervises
// the processes (restarting crashed ones with exponential backoff) and sends
// them batches of resources to validate.
//
// A Host is created with NewHost, started once with Start and stopped with
// Close. All methods are safe for concurrent use after Start. The registry is
// fixed at Start for the life of the Host: a plugin that comes back from a
// restart with different types is logged, not re-registered.
package plugin
