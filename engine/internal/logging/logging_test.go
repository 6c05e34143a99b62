package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewJSONWritesStructuredLines(t *testing.T) {
	var buf bytes.Buffer
	log, err := New("debug", "json", &buf)
	require.NoError(t, err)
	log.Named("api").Debug("hello", "zone", "zone-1")

	var line map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &line), buf.String())
	assert.Equal(t, "hello", line["@message"])
	assert.Equal(t, "kds-engine.api", line["@module"])
	assert.Equal(t, "zone-1", line["zone"])
}

func TestNewTextRespectsLevel(t *testing.T) {
	var buf bytes.Buffer
	log, err := New("WARN", "text", &buf)
	require.NoError(t, err)
	log.Info("not shown")
	log.Warn("shown")
	assert.NotContains(t, buf.String(), "not shown")
	assert.Contains(t, buf.String(), "shown")
	assert.False(t, strings.HasPrefix(strings.TrimSpace(buf.String()), "{"), "text format, not JSON")
}

func TestNewEveryLevel(t *testing.T) {
	for _, l := range Levels {
		_, err := New(l, "text", &bytes.Buffer{})
		assert.NoError(t, err, l)
	}
}

func TestNewRejectsInvalidSettings(t *testing.T) {
	_, err := New("verbose", "text", &bytes.Buffer{})
	require.Error(t, err)
	assert.Equal(t, `log-level: "verbose" is not a level (accepted: trace, debug, info, warn, error)`, err.Error())

	_, err = New("info", "logfmt", &bytes.Buffer{})
	require.Error(t, err)
	assert.Equal(t, `log-format: "logfmt" is not a format (accepted: text, json)`, err.Error())
}
