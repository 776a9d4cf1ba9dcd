package gateway

// BufferedBytes is how much of MaxBufferedBytes g's calls hold now.
func BufferedBytes(g *Gateway) int64 { return g.held.Load() }
