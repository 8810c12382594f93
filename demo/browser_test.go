package demo

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// browser drives a headless Chromium through the DevTools protocol over
// --remote-debugging-pipe (JSON messages separated by NUL on fds 3 and 4),
// which needs no WebSocket client and no dependency.
type browser struct {
	cmd     *exec.Cmd
	w       io.WriteCloser
	mu      sync.Mutex
	nextID  int
	waiters map[int]chan cdpReply
	session string
	done    chan struct{}
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

func startBrowser(ctx context.Context, path, profileDir string) (*browser, error) {
	toBrowserR, toBrowserW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	fromBrowserR, fromBrowserW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, path,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+profileDir, "--window-size=1400,900", "--remote-debugging-pipe", "about:blank")
	cmd.ExtraFiles = []*os.File{toBrowserR, fromBrowserW} // fd 3: commands in, fd 4: replies out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", path, err)
	}
	toBrowserR.Close()
	fromBrowserW.Close()
	b := &browser{cmd: cmd, w: toBrowserW, waiters: map[int]chan cdpReply{}, done: make(chan struct{})}
	go b.read(fromBrowserR)
	return b, nil
}

func (b *browser) read(r io.Reader) {
	defer close(b.done)
	br := bufio.NewReader(r)
	for {
		msg, err := br.ReadBytes(0)
		if err != nil {
			return
		}
		var m struct {
			ID int `json:"id"`
			cdpReply
		}
		if json.Unmarshal(msg[:len(msg)-1], &m) != nil || m.ID == 0 {
			continue // events
		}
		b.mu.Lock()
		ch := b.waiters[m.ID]
		delete(b.waiters, m.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- m.cdpReply
		}
	}
}

func (b *browser) call(ctx context.Context, method string, params any, out any) error {
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan cdpReply, 1)
	b.waiters[id] = ch
	msg := map[string]any{"id": id, "method": method, "params": params}
	if b.session != "" && method != "Target.createTarget" && method != "Target.attachToTarget" {
		msg["sessionId"] = b.session
	}
	raw, _ := json.Marshal(msg)
	_, err := b.w.Write(append(raw, 0))
	b.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return fmt.Errorf("%s: %s", method, r.Error.Message)
		}
		if out != nil {
			return json.Unmarshal(r.Result, out)
		}
		return nil
	case <-b.done:
		return fmt.Errorf("%s: the browser exited", method)
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// open creates a page, attaches to it, and sets headers sent with every
// request of the page (subresources and API calls included).
func (b *browser) open(ctx context.Context, headers map[string]string) error {
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := b.call(ctx, "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		return err
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call(ctx, "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		return err
	}
	b.session = att.SessionID
	for _, m := range []string{"Page.enable", "Network.enable", "Runtime.enable"} {
		if err := b.call(ctx, m, map[string]any{}, nil); err != nil {
			return err
		}
	}
	if err := b.call(ctx, "Emulation.setDeviceMetricsOverride", map[string]any{"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": false}, nil); err != nil {
		return err
	}
	if len(headers) > 0 {
		return b.call(ctx, "Network.setExtraHTTPHeaders", map[string]any{"headers": headers}, nil)
	}
	return nil
}

func (b *browser) navigate(ctx context.Context, url string) error {
	return b.call(ctx, "Page.navigate", map[string]any{"url": url}, nil)
}

// eval evaluates expr in the page (awaiting it when it is a promise) and
// returns its value as a string.
func (b *browser) eval(ctx context.Context, expr string) (string, error) {
	var r struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
	}
	if err := b.call(ctx, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &r); err != nil {
		return "", err
	}
	switch v := r.Result.Value.(type) {
	case string:
		return v, nil
	case nil:
		return "", nil
	default:
		return fmt.Sprint(v), nil
	}
}

// waitText polls the page's text until cond holds or ctx ends.
func (b *browser) waitText(ctx context.Context, cond func(string) bool) (string, error) {
	var last string
	for {
		text, err := b.eval(ctx, "document.body ? document.body.innerText : ''")
		if err == nil {
			last = text
			if cond(text) {
				return text, nil
			}
		}
		select {
		case <-ctx.Done():
			return last, errors.New("page never showed what was expected")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (b *browser) screenshot(ctx context.Context) ([]byte, error) {
	var r struct {
		Data string `json:"data"`
	}
	if err := b.call(ctx, "Page.captureScreenshot", map[string]any{"format": "png"}, &r); err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(r.Data)
}

func (b *browser) close() {
	_ = b.call(context.Background(), "Browser.close", map[string]any{}, nil)
	b.w.Close()
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
		_ = b.cmd.Process.Kill()
	}
	_ = b.cmd.Wait()
}
