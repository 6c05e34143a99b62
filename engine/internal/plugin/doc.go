// Package plugin is the engine's plugin host: it finds kds-plugin-* binaries
// in the plugins directory, starts them with the go-plugin handshake (gRPC
// only, versions negotiated, AutoMTLS on the connection), asks each for its
// types, builds the type registry and the send-buffer capacity, supervises
// the processes (restarting crashed ones with exponential backoff) and sends
// them batches of resources to validate.
//
// Every launch, the first start and every restart, checks the plugins
// directory and the binary with every directory up to / (ErrUnsafePath),
// opens the binary once, hashes that open file when the directory's lock
// file or the binary's .sha256 file applies, and executes that same open
// file, so what runs is what was checked even if the path changes
// meanwhile. A restart refused by these checks leaves the plugin failed.
//
// A Host is created with NewHost, started once with Start and stopped with
// Close. All methods are safe for concurrent use after Start. The registry is
// fixed at Start for the life of the Host: a plugin that comes back from a
// restart with different types is logged, not re-registered.
package plugin
