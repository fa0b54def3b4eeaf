--- What the server last told about itself, per client: `dg/status` notifications ({model, device,
--- kernels, state, lastLatencyMs}), the work-done progress of the model load, and that of a long completion
--- (its reports carry the text so far; docs/lsp.md, "Progress of a long completion"); and the one-line
--- summary `:Dg status`, `:checkhealth dg` and statuslines show.
local M = {}

M.COMPLETING = 'dg-lsp: completing' -- the title of a long completion's progress

local status = {} ---@type table<integer, table> client id -> last dg/status
local progress = {} ---@type table<integer, table> client id -> model-load progress, while it runs
local completing = {} ---@type table<integer, {token: any, text: string}> client id -> the long completion running

--- The `dg/status` notification handler.
function M.on_status(_, result, ctx)
  status[ctx.client_id] = result
end

--- `LspProgress` autocmd data (of any client: only dg-lsp's is kept).
function M.on_progress(data)
  local client = vim.lsp.get_client_by_id(data.client_id)
  if client and client.name == 'dg-lsp' and data.params then
    local value, token = data.params.value or {}, data.params.token
    if value.title == M.COMPLETING then -- Neovim copies the title of `begin` onto the later messages
      local now = completing[data.client_id]
      if value.kind ~= 'end' then
        completing[data.client_id] = { token = token, text = value.message or '' }
      elseif now and now.token == token then -- an older completion ending after a newer one began keeps it
        completing[data.client_id] = nil
      end
      return
    end
    progress[data.client_id] = value.kind ~= 'end' and vim.tbl_extend('force', progress[data.client_id] or {}, value)
      or nil
  end
end

function M.forget(client_id)
  status[client_id], progress[client_id], completing[client_id] = nil, nil, nil
end

--- Last known state of a client: `dg/status` fields plus `progress` while the model loads and `completing`
--- (the text so far) while a long completion runs.
function M.get(client_id)
  local running = completing[client_id]
  return vim.tbl_extend('force', status[client_id] or {},
    { progress = progress[client_id], completing = running and running.text })
end

--- Lines of the text so far (a trailing line break starts no line yet).
function M.lines(text)
  return text == '' and 0 or #vim.split((text:gsub('\r?\n$', '')), '\r?\n')
end

--- State, model, device, kernels and the last latency (or the loading progress) of `client`.
function M.describe(client)
  local s = M.get(client.id)
  if s.completing then
    local n = M.lines(s.completing)
    return n == 0 and M.COMPLETING .. '…' or ('%s… %d %s'):format(M.COMPLETING, n, n == 1 and 'line' or 'lines')
  end
  if s.progress then
    local pct = s.progress.percentage and (' %d%%'):format(s.progress.percentage) or ''
    return ('dg-lsp loading%s %s'):format(pct, s.progress.message or s.progress.title or '')
  end
  local latency = type(s.lastLatencyMs) == 'number' and (' · last %d ms'):format(s.lastLatencyMs) or ''
  return ('dg-lsp %s · model %s · device %s · kernels %s%s'):format(s.state or 'starting', tostring(s.model or '?'),
    tostring(s.device or '?'), tostring(s.kernels or '?'), latency)
end

--- One line about the server of `bufnr` (or any dg-lsp server).
function M.summary(bufnr)
  local client = vim.lsp.get_clients({ name = 'dg-lsp', bufnr = bufnr })[1]
    or vim.lsp.get_clients({ name = 'dg-lsp' })[1]
  return client and M.describe(client) or 'dg-lsp is not running'
end

return M
