package worker

import (
	"context"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
)

// wmLogger adapts the worker's slog.Logger for Watermill: Watermill's Info
// goes to Debug, and nothing below the logger's level is built at all.
// Watermill's router and subscriber log at Trace and Debug for every
// message, and its slog adapter turns the fields into attributes before
// slog looks at the level; the gate skips that work (5% of the worker's
// allocations under load).
type wmLogger struct {
	watermill.LoggerAdapter
	log *slog.Logger
}

func newWMLogger(log *slog.Logger) watermill.LoggerAdapter {
	inner := watermill.NewSlogLoggerWithLevelMapping(log, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})
	return wmLogger{LoggerAdapter: inner, log: log}
}

func (l wmLogger) enabled(level slog.Level) bool {
	return l.log.Enabled(context.Background(), level)
}

func (l wmLogger) Info(msg string, fields watermill.LogFields) {
	if l.enabled(slog.LevelDebug) {
		l.LoggerAdapter.Info(msg, fields)
	}
}

func (l wmLogger) Debug(msg string, fields watermill.LogFields) {
	if l.enabled(slog.LevelDebug) {
		l.LoggerAdapter.Debug(msg, fields)
	}
}

func (l wmLogger) Trace(msg string, fields watermill.LogFields) {
	if l.enabled(watermill.LevelTrace) {
		l.LoggerAdapter.Trace(msg, fields)
	}
}

func (l wmLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return wmLogger{LoggerAdapter: l.LoggerAdapter.With(fields), log: l.log}
}
