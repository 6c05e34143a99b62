// Package sdk is the only package a kds-engine plugin author imports.
//
// A plugin is a small program named kds-plugin-NAME that supplies one or more
// resource types. With this package it is three steps:
//
//  1. declare each type with [Define], giving its name, direction, scope and
//     a Go struct for its spec (the JSON Schema is derived from the struct);
//  2. write a validate function per type; it receives the spec already
//     decoded into the struct and returns field errors built with [Field];
//  3. call [Serve] from main.
//
// The engine starts the binary, speaks the versioned go-plugin handshake
// defined by [Handshake] over gRPC, calls Describe once per start and then
// Validate with batches of resources. See docs/plugins.md for the full guide
// and package sdktest for testing a plugin without the engine.
//
// The exported protocol pieces ([Handshake], [VersionedPlugins],
// [GRPCPlugin], [Conn]) are shared with the engine's plugin host so both ends
// agree by construction; plugin authors do not need them.
package sdk
