// Package pluginv1 holds the generated code for the plugin protocol
// (sdk/proto/plugin/v1/plugin.proto) spoken between the engine's plugin host and
// kds-plugin-* binaries. It lives in the sdk module so that plugins do not
// depend on the engine. Plugin authors use the sdk package instead of this
// one. Regenerate with `make proto` from the repository root.
package pluginv1
