// Package pluginv1 holds the generated code for the plugin protocol
// (proto/plugin/v1/plugin.proto) spoken between the engine's plugin host and
// kds-plugin-* binaries. Plugin authors use the sdk package instead of this
// one. Regenerate with `make proto`.
package pluginv1
