--- The dg-lsp client: one server process for every buffer of the configured filetypes, restart, and a
--- message when it exits (what it reports about itself is kept by dg.status).
local config = require('dg.config')
local status = require('dg.status')
local M = {}

M.name = 'dg-lsp'

M.defaults = {
  cmd = { 'dg-lsp' }, -- the server command; e.g. { '/path/to/.venv/bin/dg-lsp' }
  filetypes = { 'python' }, -- buffers that start / attach the server
  root_markers = { 'pyproject.toml', 'setup.py', '.git' },
  settings = {}, -- dg-lsp options (docs/lsp.md), sent as initializationOptions
}

function M.validate(opts, problems)
  local is = config.is
  return config.check('server', opts, M.defaults, {
    cmd = { is.strings, 'a list of strings (command and arguments)' },
    filetypes = { is.strings, 'a list of filetypes' },
    root_markers = { is.strings, 'a list of file names' },
    settings = { is.table, 'a table of dg-lsp options' },
  }, problems)
end

local stopping = {} ---@type table<integer, boolean> clients stopped on purpose
local missing = {} ---@type table<string, boolean> server commands already reported as missing

--- `client:method(...)` from Neovim 0.11, `client.method(...)` in 0.10.
function M.call(client, method, ...)
  if vim.fn.has('nvim-0.11') == 1 then
    return client[method](client, ...)
  end
  return client[method](...)
end

--- Called from the process's exit callback (a fast event): everything happens on the main loop.
local function on_exit(code, signal, client_id)
  vim.schedule(function()
    status.forget(client_id)
    if stopping[client_id] or vim.v.exiting ~= vim.NIL then
      stopping[client_id] = nil
      return
    end
    vim.notify(('dg: the dg-lsp server exited (code %d, signal %d); ghost text is off. '
      .. ':Dg restart starts it again, :LspLog shows its log.'):format(code, signal), vim.log.levels.ERROR)
  end)
end

--- `settings` as JSON objects: vim.json sends an empty Lua table as [], the server expects {}.
local function objects(value)
  if type(value) ~= 'table' then
    return value
  elseif next(value) == nil then
    return vim.empty_dict()
  end
  local out = {}
  for key, item in pairs(value) do
    out[key] = objects(item)
  end
  return out
end

--- Start the server for `bufnr`, or attach it to the running one.
function M.start(bufnr)
  local opts = config.options.server
  if vim.fn.executable(opts.cmd[1]) ~= 1 then
    if not missing[opts.cmd[1]] then
      missing[opts.cmd[1]] = true
      config.notify(('the server command %q is not executable; install dg-lsp or set server.cmd')
        :format(opts.cmd[1]), vim.log.levels.ERROR)
    end
    return nil
  end
  return vim.lsp.start({
    name = M.name,
    cmd = opts.cmd,
    root_dir = vim.fs.root(bufnr, opts.root_markers) or vim.fn.getcwd(),
    init_options = objects(opts.settings),
    -- the server then reports long completions as progress on tokens it creates (vim.lsp.inline_completion
    -- puts none on its requests); dg.status shows it
    capabilities = vim.tbl_deep_extend('force', vim.lsp.protocol.make_client_capabilities(),
      { experimental = { dgCompletionProgress = true } }),
    handlers = { ['dg/status'] = status.on_status },
    on_attach = function(client, buf)
      require('dg.ghost').attach(client, buf)
      require('dg.keys').attach(buf)
    end,
    on_exit = on_exit,
  }, { bufnr = bufnr, reuse_client = function(client)
    return client.name == M.name and not M.call(client, 'is_stopped')
  end })
end

function M.clients(bufnr)
  return vim.lsp.get_clients({ name = M.name, bufnr = bufnr })
end

--- Stop every dg-lsp client, then start one for each loaded buffer of the configured filetypes.
function M.restart()
  for _, client in ipairs(M.clients()) do
    stopping[client.id] = true
    M.call(client, 'stop')
    vim.wait(3000, function() return M.call(client, 'is_stopped') end, 20)
  end
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(buf) and vim.tbl_contains(config.options.server.filetypes, vim.bo[buf].filetype) then
      M.start(buf)
    end
  end
end

return M
